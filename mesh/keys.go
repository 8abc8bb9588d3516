package mesh

import (
	"errors"
	"fmt"
)

// ErrNotEncrypted means the mesh was started without keys.
var ErrNotEncrypted = errors.New("mesh: gossip is not encrypted (no keyring)")

// The keyring methods wrap memberlist's, for key rotation without downtime:
// every node adds the new key (it decrypts with every key it holds), then
// every node switches its primary (the key it encrypts with) to it, then the
// old key is removed. Until the last step a node that has not switched yet
// is still understood by all.

// AddKey installs a key (16, 24 or 32 bytes) for decryption; it does not
// change the primary. Adding a key twice is a no-op.
func (m *Mesh) AddKey(k []byte) error {
	if m.keyring == nil {
		return ErrNotEncrypted
	}
	if l := len(k); l != 16 && l != 24 && l != 32 {
		return fmt.Errorf("mesh: gossip key is %d bytes; want 16, 24 or 32", len(k))
	}
	return m.keyring.AddKey(k)
}

// UseKey makes an installed key the primary.
func (m *Mesh) UseKey(k []byte) error {
	if m.keyring == nil {
		return ErrNotEncrypted
	}
	return m.keyring.UseKey(k)
}

// RemoveKey removes a key; the primary cannot be removed.
//
// memberlist v0.7.0's Keyring.RemoveKey shifts the keys down in place, in
// the very slice GetKeys has handed to packet decryption, which reads it
// without the lock (a data race the race detector sees). UseKey on the
// current primary first installs a fresh slice that no reader holds yet,
// so the in-place shift only touches memory nobody else reads (bar a
// decryption starting in the instant between the two calls).
func (m *Mesh) RemoveKey(k []byte) error {
	if m.keyring == nil {
		return ErrNotEncrypted
	}
	if err := m.keyring.UseKey(m.keyring.GetPrimaryKey()); err != nil {
		return err
	}
	return m.keyring.RemoveKey(k)
}

// Keys returns the installed keys, the primary first.
func (m *Mesh) Keys() [][]byte {
	if m.keyring == nil {
		return nil
	}
	return m.keyring.GetKeys()
}
