package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/fleetmesh/fleetmesh/apps"
	"github.com/fleetmesh/fleetmesh/testenv/image"
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Docker returns a client for the engine, or an error saying why there is
// none.
func Docker() (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		return nil, err
	}
	return cli, nil
}

var (
	imageOnce sync.Once
	imageErr  error
)

// HealthImage tags of the test application (see image.HealthSrv): two tags
// of the same program, to deploy "new versions".
const (
	HealthImageV1 = "fleetmesh-test/healthsrv:1"
	HealthImageV2 = "fleetmesh-test/healthsrv:2"
)

// BuildHealthImage builds the test application image once per process.
func BuildHealthImage() error {
	imageOnce.Do(func() {
		cli, err := Docker()
		if err != nil {
			imageErr = err
			return
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		imageErr = image.BuildGo(ctx, cli, image.HealthSrv, 8080, HealthImageV1, HealthImageV2)
	})
	return imageErr
}

// Containers lists the containers of this fleet's node (by name) on the
// engine.
func (f *Fleet) Containers(nodeName string) ([]container.Summary, error) {
	cli, err := Docker()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	return cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", apps.LabelManaged+"=true"),
		filters.Arg("label", apps.LabelNode+"="+f.ContainerPrefix+nodeName))})
}

// removeContainers removes every container of this fleet.
func (f *Fleet) removeContainers() {
	cli, err := Docker()
	if err != nil {
		return
	}
	defer cli.Close()
	ctx := context.Background()
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", apps.LabelManaged+"=true"))})
	if err != nil {
		return
	}
	for _, c := range list {
		if strings.HasPrefix(c.Labels[apps.LabelNode], f.ContainerPrefix) {
			cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
		}
	}
}
