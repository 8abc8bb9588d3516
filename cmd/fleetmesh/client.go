package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/spf13/cobra"
)

// clientFlags are the flags every operator command shares. Flags override
// the FLEETMESH_ADDR, FLEETMESH_TOKEN and FLEETMESH_CACERT environment.
type clientFlags struct {
	addr, token, caCert, output string
}

func (c *clientFlags) register(cmd *cobra.Command, listing bool) {
	cmd.Flags().StringVar(&c.addr, "addr", "", "node API address host:port (default $FLEETMESH_ADDR)")
	cmd.Flags().StringVar(&c.token, "token", "", "operator credential (default $FLEETMESH_TOKEN)")
	cmd.Flags().StringVar(&c.caCert, "ca-cert", "", "fleet CA certificate file (default $FLEETMESH_CACERT)")
	if listing {
		cmd.Flags().StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	}
}

func (c *clientFlags) client() (*api.Client, error) {
	if c.output != "" && c.output != "table" && c.output != "json" {
		return nil, fmt.Errorf("--output: %q is not table or json", c.output)
	}
	addr := firstNonEmpty(c.addr, os.Getenv("FLEETMESH_ADDR"))
	token := firstNonEmpty(c.token, os.Getenv("FLEETMESH_TOKEN"))
	caPath := firstNonEmpty(c.caCert, os.Getenv("FLEETMESH_CACERT"))
	if addr == "" {
		return nil, errors.New("no node address: set FLEETMESH_ADDR or pass --addr host:port")
	}
	var ca []byte
	if caPath != "" {
		b, err := os.ReadFile(caPath)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		ca = b
	}
	return api.NewClient(addr, token, ca)
}

func (c *clientFlags) json() bool { return c.output == "json" }

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// printJSON prints v for -o json: indented, with '<' and '>' left alone
// (redacted tokens carry them).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
