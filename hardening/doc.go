// Package hardening is the declarative OS security policy: it checks a root
// filesystem against a SecurityPolicy (report) and applies it (idempotent, with
// backups). It works against any root directory so it is testable without
// touching the host, and it must not import the Docker client or the fleet.
package hardening
