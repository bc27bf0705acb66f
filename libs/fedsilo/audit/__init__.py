"""Tamper-evident audit log: append-only JSON lines, each entry chained to the previous."""

from fedsilo.audit.log import AuditEntry, AuditLog, AuditVerification, verify_audit_log

__all__ = ["AuditEntry", "AuditLog", "AuditVerification", "verify_audit_log"]
