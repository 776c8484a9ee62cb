"""Research experiments beside the bench harness: what they measure is a question about a method
(how accuracy falls with fewer visual tokens; the gains estimated before they were measured), not a bench row."""
