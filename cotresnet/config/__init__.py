"""The typed configuration: composing it from conf/ (compose), the schema Hydra composes into (schema), every
check a type cannot express (validate), the replica format of vectorized jobs (replicas) and values derived from
a configuration (derived). No torch."""
