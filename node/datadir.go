package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Files in the data dir.
const (
	fileState    = "node.json" // written last: its presence means "member"
	fileKey      = "key.pem"
	fileCert     = "cert.pem"
	fileCA       = "ca.pem"
	fileGossip   = "gossip.keys"
	filePeers    = "peers.json"
	fileSpec     = "spec.json"
	fileOperator = "operator.token"
	fileLock     = "LOCK"
	dirRaft      = "raft"
)

// ErrLocked means another agent uses the data dir.
var ErrLocked = errors.New("another fleetmesh agent is using this data dir")

// persisted is node.json: who this node is in which fleet.
type persisted struct {
	Name      string            `json:"name"`
	Role      string            `json:"role"`
	Site      string            `json:"site,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	ClusterID string            `json:"cluster_id"`
	// Addrs are the API addresses this node first joined through.
	Addrs []string `json:"addrs,omitempty"`
	// The addresses configured when the node was made: a restart with no
	// address flags binds and advertises the same.
	Bind         string `json:"bind,omitempty"`
	API          string `json:"api,omitempty"`
	Raft         string `json:"raft,omitempty"`
	AdvertiseAPI string `json:"advertise_api,omitempty"`
	// Ports remembered so a restart binds the same ones.
	GossipPort int `json:"gossip_port"`
	APIPort    int `json:"api_port"`
	RaftPort   int `json:"raft_port,omitempty"`
}

type dataDir struct {
	path string
	lock *os.File
}

// openDataDir creates (0700) and locks the data dir.
func openDataDir(path string) (*dataDir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", path, err)
	}
	probe := filepath.Join(path, ".probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		return nil, fmt.Errorf("data dir %s is not writable: %w", path, err)
	}
	os.Remove(probe)
	f, err := os.OpenFile(filepath.Join(path, fileLock), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	return &dataDir{path: path, lock: f}, nil
}

func (d *dataDir) close() {
	if d.lock != nil {
		syscall.Flock(int(d.lock.Fd()), syscall.LOCK_UN)
		d.lock.Close()
		d.lock = nil
	}
}

func (d *dataDir) file(name string) string { return filepath.Join(d.path, name) }

func (d *dataDir) read(name string) ([]byte, error) { return os.ReadFile(d.file(name)) }

// write replaces a file atomically: temp file, fsync, rename, fsync dir.
func (d *dataDir) write(name string, data []byte, mode os.FileMode) error {
	return writeAtomic(d.file(name), data, mode)
}

func (d *dataDir) writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return d.write(name, b, 0o600)
}

func (d *dataDir) exists(name string) bool {
	_, err := os.Stat(d.file(name))
	return err == nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if df, err := os.Open(dir); err == nil {
		df.Sync()
		df.Close()
	}
	return nil
}

// readPersisted reads node.json from a data dir without locking it; it
// returns an error when there is none.
func readPersisted(dataDir string) (*persisted, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, fileState))
	if err != nil {
		return nil, err
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", fileState, err)
	}
	return &p, nil
}
