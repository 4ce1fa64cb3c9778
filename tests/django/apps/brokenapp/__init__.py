"""An app whose tasks module fails to import, for the discovery error."""
