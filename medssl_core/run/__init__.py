"""One run spec -> one record: inputs, the pretraining and evaluation runs, where a run writes."""
