"""conductor: keeps a fleet of hardware nodes in sync with reality."""
