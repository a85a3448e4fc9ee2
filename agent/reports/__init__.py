"""Maintenance reports: building and rendering them (`build`, templates in `templates/`), the outbox and its
delivery by mail or S3 (`delivery`), and the state of the daily…quarterly checklists (`checklist`)."""
