"""metalcast conductor: state machines, persistence, drivers and workers."""
