package node

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/node/api"
)

// The audit log lives in the Raft FSM beside the spec, not in the spec
// itself: every write through the API carries its audit entry in the same
// Raft command, so the record and the change commit together (or a refused
// command is recorded as refused, with its index), it survives restarts and
// leader changes, and every gateway holds it. It stays out of the spec
// because the spec is copied to every edge device on every change: a
// thousand entries of who-did-what would multiply each spec fetch and put
// operator names and addresses on devices that are easier to steal than
// gateways. An edge answers GET /v1/audit by asking a gateway over mutual
// TLS. The FSM keeps the last consensus.MaxAudit entries.
//
// Writes refused before they reach the leader (no credential, a viewer
// credential, no quorum) cannot be committed; they go to the node's log.

func (n *Node) handleAudit(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l < 1 || l > consensus.MaxAudit {
			writeError(w, http.StatusBadRequest, errors.New("limit: a number from 1 to 1000"))
			return
		}
		limit = l
	}
	entries, err := n.auditLog(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	if len(entries) > limit {
		entries = entries[len(entries)-limit:]
	}
	out := make([]api.AuditEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, api.AuditEntry{Index: e.Index, Time: e.Time, OperatorID: e.OperatorID, OperatorName: e.OperatorName,
			Role: e.Role, Method: e.Method, Path: e.Path, Summary: e.Summary, Remote: e.Remote, Via: e.Via, Result: e.Result, Error: e.Error})
	}
	writeJSON(w, http.StatusOK, out)
}

// auditLog is the log from this gateway, or from a live gateway for an edge.
func (n *Node) auditLog(r *http.Request) ([]consensus.AuditEntry, error) {
	if n.store != nil {
		return n.store.Audit(), nil
	}
	var errs []error
	for _, m := range n.mesh.Members() {
		if !m.Alive || m.Role != "gateway" || m.API == "" {
			continue
		}
		var out []consensus.AuditEntry
		// The operator's own admin credential goes along: a node's
		// certificate alone does not open the audit log.
		if err := n.peerDo(r.Context(), http.MethodGet, m.API, "/internal/v1/audit", nil, &out, callerFrom(r.Context()), true); err != nil {
			errs = append(errs, err)
			continue
		}
		return out, nil
	}
	return nil, errors.Join(append([]error{consensus.ErrNoLeader, errors.New("no gateway reachable to read the audit log from")}, errs...)...)
}

// handleInternalAudit serves the audit log to another node of the fleet.
func (n *Node) handleInternalAudit(w http.ResponseWriter, r *http.Request) {
	if n.store == nil {
		writeError(w, http.StatusMisdirectedRequest, errors.New("only gateways hold the audit log"))
		return
	}
	writeJSON(w, http.StatusOK, n.store.Audit())
}
