"""Lightning's ``loops.optimization`` path: the closure of automatic optimization (see ``automatic``)."""
