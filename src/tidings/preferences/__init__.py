"""Recipients' choices: which categories reach them on which channels."""
