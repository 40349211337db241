"""Cloud adapters implementing `jitcore.ports.Provider`; each one alone imports its SDK."""
