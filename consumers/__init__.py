"""Consumer services that turn raw postbacks into the documented event stream."""
