// Package image builds the tests' container images locally: there is no
// registry to pull from, so each image is a static Go program (CGO_ENABLED=0)
// in a FROM-scratch context, built through the Docker Engine API. It imports
// no other fleetmesh package.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
)

// HealthSrv is the import path of the tests' application: an HTTP server on
// $PORT whose /health can be told to fail (POST /fail) and whose /env echoes
// its environment.
const HealthSrv = "github.com/fleetmesh/fleetmesh/apps/testdata/healthsrv"

// BuildGo compiles the Go command at pkg (an import path or a ./dir) into a
// static binary and builds an image FROM scratch that runs it, with the
// given tags. port is exposed and set as $PORT.
func BuildGo(ctx context.Context, cli client.APIClient, pkg string, port int, tags ...string) error {
	dir, err := os.MkdirTemp("", "fleetmesh-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "app")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY app /%[1]s\nENV PORT=%[2]d\nEXPOSE %[2]d\nENTRYPOINT [\"/%[1]s\"]\n", filepath.Base(pkg), port)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, []byte(dockerfile)}, {"app", 0o755, prog}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{Tags: tags, Remove: true, ForceRemove: true, Version: build.BuilderV1})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return jsonmessage.DisplayJSONMessagesStream(resp.Body, io.Discard, 0, false, nil)
}
