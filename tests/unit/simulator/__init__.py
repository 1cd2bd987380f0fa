"""Tests of the provider simulator; `scripted_server` is the HTTP server they post to."""
