"""The `postback-pipeline` command: one entry point that dispatches to every service and tool."""
