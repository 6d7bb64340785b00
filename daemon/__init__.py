"""qonto-invoice-daemon: import already-issued client invoices into Qonto from watched folders."""

__version__ = "0.1.0"
