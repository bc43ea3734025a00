"""What every layer shares: errors, atomic writes, seeding, devices, provenance, code digests."""
