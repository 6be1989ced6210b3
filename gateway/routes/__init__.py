"""HTTP routes: thin glue between the wire format and the serving logic."""
