// Package jointoken defines the one string a new device needs to join a fleet:
// where to reach the fleet, the SHA-256 pin of the fleet CA's public key, and a
// token id and secret. It only formats and parses; issuing and checking tokens
// belongs to consensus (which stores them hashed) and the join handshake to node.
//
// The format, version 1:
//
//	fm1:<id>.<secret>@<pin>@<addr>[,<addr>...]
//
// id is 6 characters of [a-z0-9] and public (it names the token in listings);
// secret is 32 characters of [a-z0-9] and must never be logged; pin is the
// unpadded base64url SHA-256 of the CA certificate's SubjectPublicKeyInfo (43
// characters); each addr is host:port of a node's HTTPS API. '@' appears in no
// part, so the string splits without ambiguity and survives copy and paste,
// shells and YAML unquoted.
package jointoken

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Prefix starts every version-1 token.
const Prefix = "fm1:"

const (
	idLen     = 6
	secretLen = 32
	pinLen    = 43 // base64url, no padding, of 32 bytes
	maxAddrs  = 16
	maxLen    = 2048
	alphabet  = "abcdefghijklmnopqrstuvwxyz0123456789"
)

// Errors returned by Parse. They never contain the secret.
var (
	ErrMalformed = errors.New("malformed join token")
)

// Token is a parsed join token.
type Token struct {
	ID     string
	Secret string
	Pin    string   // base64url SHA-256 of the CA's SubjectPublicKeyInfo
	Addrs  []string // host:port of fleet API endpoints
}

// New returns a token with a fresh random id and secret.
func New(pin string, addrs []string) (Token, error) {
	id, err := randString(idLen)
	if err != nil {
		return Token{}, err
	}
	secret, err := randString(secretLen)
	if err != nil {
		return Token{}, err
	}
	t := Token{ID: id, Secret: secret, Pin: pin, Addrs: append([]string(nil), addrs...)}
	if err := t.Validate(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// String formats the token. The result contains the secret: never log it.
func (t Token) String() string {
	return Prefix + t.ID + "." + t.Secret + "@" + t.Pin + "@" + strings.Join(t.Addrs, ",")
}

// Redacted is safe to log: it keeps the id and addresses only.
func (t Token) Redacted() string {
	return Prefix + t.ID + ".<redacted>@" + t.Pin + "@" + strings.Join(t.Addrs, ",")
}

// Validate checks every part of the token.
func (t Token) Validate() error {
	if !isAlnum(t.ID, idLen) {
		return fmt.Errorf("%w: token id must be %d characters of a-z0-9", ErrMalformed, idLen)
	}
	if !isAlnum(t.Secret, secretLen) {
		return fmt.Errorf("%w: token secret must be %d characters of a-z0-9", ErrMalformed, secretLen)
	}
	if len(t.Pin) != pinLen {
		return fmt.Errorf("%w: CA pin must be %d characters of base64url", ErrMalformed, pinLen)
	}
	if b, err := base64.RawURLEncoding.DecodeString(t.Pin); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("%w: CA pin is not a base64url SHA-256", ErrMalformed)
	}
	if len(t.Addrs) == 0 {
		return fmt.Errorf("%w: no fleet address", ErrMalformed)
	}
	if len(t.Addrs) > maxAddrs {
		return fmt.Errorf("%w: more than %d fleet addresses", ErrMalformed, maxAddrs)
	}
	for i, a := range t.Addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			return fmt.Errorf("%w: fleet address %d %q is not host:port", ErrMalformed, i+1, a)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("%w: fleet address %d %q has a bad port", ErrMalformed, i+1, a)
		}
		if strings.ContainsAny(a, "@ \t\r\n") {
			return fmt.Errorf("%w: fleet address %d contains a forbidden character", ErrMalformed, i+1)
		}
	}
	return nil
}

// Parse parses a token string. Errors say which part is wrong and never
// echo the secret.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxLen {
		return Token{}, fmt.Errorf("%w: longer than %d characters", ErrMalformed, maxLen)
	}
	if !strings.HasPrefix(s, Prefix) {
		return Token{}, fmt.Errorf("%w: it must start with %q", ErrMalformed, Prefix)
	}
	parts := strings.Split(strings.TrimPrefix(s, Prefix), "@")
	if len(parts) != 3 {
		return Token{}, fmt.Errorf("%w: want %s<id>.<secret>@<ca-pin>@<addr>[,<addr>]", ErrMalformed, Prefix)
	}
	id, secret, ok := strings.Cut(parts[0], ".")
	if !ok {
		return Token{}, fmt.Errorf("%w: missing '.' between token id and secret", ErrMalformed)
	}
	t := Token{ID: id, Secret: secret, Pin: parts[1], Addrs: strings.Split(parts[2], ",")}
	if err := t.Validate(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// PinOf returns the pin of a CA certificate: base64url SHA-256 of its
// SubjectPublicKeyInfo.
func PinOf(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// PinMatches reports in constant time whether cert's key has the given pin.
func PinMatches(cert *x509.Certificate, pin string) bool {
	return subtle.ConstantTimeCompare([]byte(PinOf(cert)), []byte(pin)) == 1
}

// HashSecret returns the value stored in place of a secret: hex SHA-256 of
// "id.secret". Secrets are 160+ bits of randomness, so a fast hash is enough.
func HashSecret(id, secret string) string {
	sum := sha256.Sum256([]byte(id + "." + secret))
	return fmt.Sprintf("%x", sum)
}

func isAlnum(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(alphabet, rune(s[i])) {
			return false
		}
	}
	return true
}

// Random returns n random characters of [a-z0-9], for ids and secrets.
func Random(n int) (string, error) { return randString(n) }

func randString(n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, c := range buf {
			if c < 252 && len(out) < n { // 252 = 7*36: rejection keeps it unbiased
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}
