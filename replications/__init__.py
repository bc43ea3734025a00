"""One module per replicated study; each defines a module-level ``STUDY`` (medssl_core.study.Study)."""
