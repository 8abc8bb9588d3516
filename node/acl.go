package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/node/pki"
)

// ErrAdminOnly refuses a viewer credential on an admin-only read.
var ErrAdminOnly = errors.New("this endpoint needs an admin credential; this one is a viewer")

// caller is the operator behind a request, kept in its context by the auth
// middleware so that the write path can record who asked (audit) and can
// forward the credential to the leader, which checks it again.
type caller struct {
	op      *consensus.Operator
	cred    string
	remote  string
	method  string
	path    string
	summary string
}

type callerKey struct{}

// verifiedOperatorKey carries the operator a forwarded request's credential
// was checked against on this node.
type verifiedOperatorKey struct{}

func callerFrom(ctx context.Context) *caller {
	c, _ := ctx.Value(callerKey{}).(*caller)
	return c
}

// noteAudit sets the summary the audit log records for this request's write.
// The summary must never contain a secret.
func noteAudit(r *http.Request, format string, a ...any) {
	if c := callerFrom(r.Context()); c != nil {
		c.summary = fmt.Sprintf(format, a...)
	}
}

// authenticate finds the operator credential of r and checks its role.
func (n *Node) authenticate(r *http.Request, needAdmin bool) (*consensus.Operator, int, error) {
	var op *consensus.Operator
	var err error
	n.withSpec(func(s *consensus.Spec) { op, err = checkOperator(s, bearer(r)) })
	if err != nil {
		return nil, http.StatusUnauthorized, err
	}
	if needAdmin && op.Role != consensus.OperatorAdmin {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return op, http.StatusForbidden, ErrAdminOnly
		}
		n.log.Warn("write refused: viewer credential", "operator_id", op.ID, "operator", op.Name,
			"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		return op, http.StatusForbidden, ErrForbidden
	}
	return op, 0, nil
}

// withCaller puts the request's operator in its context.
func withCaller(r *http.Request, op *consensus.Operator) *http.Request {
	c := &caller{op: op, cred: bearer(r), remote: r.RemoteAddr, method: r.Method, path: r.URL.Path}
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
}

// auditEntry is what the audit log records for a write made in ctx, or nil
// when ctx carries no operator (node-initiated writes).
func (n *Node) auditEntry(ctx context.Context, c *consensus.Command) *consensus.AuditEntry {
	cl := callerFrom(ctx)
	if cl == nil || cl.op == nil {
		return nil
	}
	sum := cl.summary
	if sum == "" {
		sum = c.Op
		if c.ID != "" {
			sum += " " + c.ID
		}
	}
	return &consensus.AuditEntry{OperatorID: cl.op.ID, OperatorName: cl.op.Name, Role: cl.op.Role,
		Method: cl.method, Path: cl.path, Summary: sum, Remote: cl.remote, Via: n.state.Name}
}

// forwardedWrite guards /internal/v1/apply. Gateways are trusted to write
// (they hold the CA key anyway). Any other node forwards operator writes
// only: the command must come with the admin credential of the operator
// who made it, checked again here. So a stolen sensor's certificate alone
// cannot change the fleet.
//
// It also guards reads that only gateways and admins may make through a
// node (the audit log).
func (n *Node) forwardedWrite(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if peer := peerCert(r); peer != nil && pki.RoleOf(peer) == "gateway" {
			h(w, r)
			return
		}
		op, code, err := n.authenticate(r, true)
		if err != nil {
			writeError(w, code, fmt.Errorf("a write forwarded by a non-gateway node must carry an admin operator credential: %w", err))
			return
		}
		// The operator checked here is who the audit log names, whatever
		// the forwarding node claimed.
		h(w, r.WithContext(context.WithValue(r.Context(), verifiedOperatorKey{}, op)))
	}
}

func (n *Node) handleACLCreate(w http.ResponseWriter, r *http.Request) {
	var req api.ACLTokenCreateRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Role != consensus.OperatorAdmin && req.Role != consensus.OperatorViewer {
		writeError(w, http.StatusBadRequest, fmt.Errorf("role: %q is not admin or viewer", req.Role))
		return
	}
	if len(req.Name) > 64 || strings.ContainsFunc(req.Name, func(c rune) bool { return c < ' ' || c == 0x7f }) {
		writeError(w, http.StatusBadRequest, errors.New("name: at most 64 printable characters"))
		return
	}
	cred, op, err := newOperator(req.Role, req.Name)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	noteAudit(r, "created %s credential %s (%q)", op.Role, op.ID, op.Name)
	idx, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpCreateOperator, Operator: op})
	if err != nil {
		writeErr(w, err)
		return
	}
	n.log.Info("operator credential created", "operator_id", op.ID, "role", op.Role, "name", op.Name)
	writeJSON(w, http.StatusCreated, api.ACLTokenCreateResponse{Credential: cred,
		ACLToken: api.ACLToken{ID: op.ID, Role: op.Role, Name: op.Name, Created: op.Created}, Index: idx})
}

func (n *Node) handleACLList(w http.ResponseWriter, r *http.Request) {
	out := []api.ACLToken{}
	n.withSpec(func(s *consensus.Spec) {
		for _, o := range s.Operators {
			out = append(out, api.ACLToken{ID: o.ID, Role: o.Role, Name: o.Name, Created: o.Created, Revoked: o.Revoked})
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) handleACLRevoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var found bool
	n.withSpec(func(s *consensus.Spec) { _, found = s.Operators[id] })
	if !found {
		writeError(w, http.StatusNotFound, fmt.Errorf("no operator credential with id %q", id))
		return
	}
	noteAudit(r, "revoked operator credential %s", id)
	idx, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpRevokeOperator, ID: id})
	if err != nil {
		writeErr(w, err)
		return
	}
	n.log.Info("operator credential revoked", "operator_id", id)
	writeJSON(w, http.StatusOK, api.WriteResult{Index: idx})
}

func (n *Node) handleTokenRevoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var found bool
	n.withSpec(func(s *consensus.Spec) { _, found = s.Tokens[id] })
	if !found {
		writeError(w, http.StatusNotFound, fmt.Errorf("no join token with id %q", id))
		return
	}
	noteAudit(r, "revoked join token %s", id)
	idx, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpRevokeToken, ID: id})
	if err != nil {
		writeErr(w, err)
		return
	}
	n.log.Info("join token revoked", "token_id", id)
	writeJSON(w, http.StatusOK, api.WriteResult{Index: idx})
}
