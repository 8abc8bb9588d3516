// Package provision prepares a new device to join a fleet without anyone typing
// on it: it parses and validates device profiles (one YAML device, or a fleet
// file as a YAML list or CSV), turns each into a cloud-init NoCloud seed
// (user-data, meta-data, network-config) whose fleetmesh unit joins with a
// join token, writes that seed and the fleetmesh binary into the FAT boot
// partition of a Raspberry Pi image file, flashes an image to a card and
// verifies it, and finds Raspberry Pis in the kernel's neighbour table.
//
// It owns no fleet state. Pre-registering expected devices with a running
// fleet goes through the Registrar interface, which the caller supplies; the
// package never talks to a node itself.
//
// Invariants: every input is validated before anything is written, and output
// (seed directories, images) appears by rename of a completed temporary, so a
// failed run leaves nothing behind. Image editing happens on the image file in
// Go (no root, loop devices or mounts) and writes only inside the chosen FAT
// partition: a bounded backend refuses any access outside it. The join token's
// secret goes only into the seed's user-data (mode 0600) and never into errors
// or logs; use jointoken.Token.Redacted to show a token.
package provision
