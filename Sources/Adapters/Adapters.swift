// Adapters: recognition of adapter files, key-naming schemes, architectures, key mapping.
import SafeTensors
