"""Pure per-record work of the processor: parse, identify, enrich. No I/O lives here."""
