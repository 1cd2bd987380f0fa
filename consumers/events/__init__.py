"""The event schema: its version, its typed shape and the JSON Schema file that is the truth."""
