package node

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/node/jointoken"
)

// Operator credentials look like "fmop:<id>.<secret>"; the spec keeps only
// the id and the hash of the secret.
const operatorPrefix = "fmop:"

// Credential errors, as operators see them.
var (
	ErrNoCredential      = errors.New("this call needs an operator credential: set FLEETMESH_TOKEN or pass --token (Authorization: Bearer ...)")
	ErrBadCredential     = errors.New("operator credential not recognised")
	ErrRevokedCredential = errors.New("operator credential has been revoked")
	ErrForbidden         = errors.New("this operator credential may only read; writes need an admin credential")
)

// newOperator makes a credential and its stored form.
func newOperator(role, name string) (string, *consensus.Operator, error) {
	id, err := jointoken.Random(8)
	if err != nil {
		return "", nil, err
	}
	secret, err := jointoken.Random(32)
	if err != nil {
		return "", nil, err
	}
	return operatorPrefix + id + "." + secret, &consensus.Operator{
		ID: id, Hash: jointoken.HashSecret(id, secret), Role: role, Name: name, Created: time.Now().UTC(),
	}, nil
}

// checkOperator finds the credential in the spec. It never echoes the
// credential in its errors.
func checkOperator(spec *consensus.Spec, cred string) (*consensus.Operator, error) {
	if cred == "" {
		return nil, ErrNoCredential
	}
	rest, ok := strings.CutPrefix(cred, operatorPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: it must start with %q", ErrBadCredential, operatorPrefix)
	}
	id, secret, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, ErrBadCredential
	}
	op, found := spec.Operators[id]
	if !found {
		return nil, ErrBadCredential
	}
	if subtle.ConstantTimeCompare([]byte(op.Hash), []byte(jointoken.HashSecret(id, secret))) != 1 {
		return nil, ErrBadCredential
	}
	if op.Revoked {
		return nil, ErrRevokedCredential
	}
	return op, nil
}
