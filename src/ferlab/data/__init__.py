"""FER2013 data: sources, the raw table, validation and training arrays."""
