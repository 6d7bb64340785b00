"""The Qonto emulator and sample invoices: for the demo and the tests, never for `run`."""
