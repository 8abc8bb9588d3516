// Command healthsrv is the application the apps tests run in containers: an
// HTTP server on $PORT (default 8080) whose /health answers 200 until told
// to fail with POST /fail (POST /ok heals it), and whose /env echoes its
// environment as JSON. "healthsrv check" probes /health, for exec checks.
package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if len(os.Args) > 1 && os.Args[1] == "check" {
		resp, err := http.Get("http://127.0.0.1:" + port + "/health")
		if err != nil || resp.StatusCode != http.StatusOK {
			os.Exit(1)
		}
		os.Exit(0)
	}
	var failing atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			http.Error(w, "failing on request", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, _ *http.Request) { failing.Store(true) })
	mux.HandleFunc("POST /ok", func(w http.ResponseWriter, _ *http.Request) { failing.Store(false) })
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, _ *http.Request) {
		env := map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		json.NewEncoder(w).Encode(env)
	})
	// PID 1 in a container gets no default SIGTERM handling: exit on it so
	// that stopping the container is quick.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; os.Exit(0) }()
	if err := http.ListenAndServe(":"+port, mux); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
