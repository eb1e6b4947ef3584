"""Small experiments from the paper that run fully on CPU (Fig. 5 toy, Fig. 3 domain probe)."""
