"""A small shop whose checkout, emails and stock reports run as Celeriac tasks."""
