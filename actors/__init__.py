"""The Ray layer: thin actors and remote tasks over `engine` functions (imported only where Ray is used)."""
