// Command fleetmesh is the one binary of a fleetmesh fleet: the agent that runs
// on every device and the operator CLI that talks to any node's API.
package main

import "os"

func main() { os.Exit(run(os.Args[1:])) }
