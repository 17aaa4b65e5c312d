// The public entry of @simdc/hypervisor: one simulated host's CPU and memory
// models, stepped on simulated time by whoever hosts them (the host agent).
