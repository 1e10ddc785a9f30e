"""brownout."""
