package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/fleetmesh/fleetmesh/apps"
)

func runAppsTemplate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newAppsTemplateCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestAppsTemplatePrintsDeployableManifest(t *testing.T) {
	out, err := runAppsTemplate(t, "telegraf")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apps.ParseAndValidate([]byte(out), apps.ValidateOptions{}); err != nil {
		t.Errorf("printed template does not validate: %v", err)
	}
	out, err = runAppsTemplate(t, "k3s", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apps.ParseAndValidate([]byte(out), apps.ValidateOptions{}); err != nil {
		t.Errorf("JSON template does not validate: %v", err)
	}
}

func TestAppsTemplateList(t *testing.T) {
	out, err := runAppsTemplate(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mosquitto", "node-red", "telegraf", "k3s"} {
		if !strings.Contains(out, name) {
			t.Errorf("list lacks %s:\n%s", name, out)
		}
	}
	out, err = runAppsTemplate(t, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]string
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 4 {
		t.Errorf("json list: %v %s", err, out)
	}
	if _, err := runAppsTemplate(t, "nginx"); err == nil {
		t.Error("unknown template accepted")
	}
}
