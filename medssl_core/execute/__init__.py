"""Where and when pending runs run (locally, on Ray), and tuning."""
