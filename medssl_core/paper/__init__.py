"""Tables, figures and the cross-study report, from SQL over the recorded runs."""
