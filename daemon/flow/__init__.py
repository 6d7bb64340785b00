"""The file's journey, one module per step of the README's story.

discover -> books -> settle -> intake (examine, facturx, decide) -> upload
-> filing -> books.finish; reconcile at start-up; einvoice after the import.
"""
