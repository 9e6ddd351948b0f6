"""tickwire's Kubernetes operator: places FeedHandlers on nodes and runs one agent Pod for each.

Modules, one job each:
  spec        the FeedHandler spec: schema validation (the CRD's own schema), defaults, CEL twins
  inventory   what a Node offers for feeds (annotations and labels the cluster admin publishes)
  placement   choosing node, NIC queue, cores and hugepages without giving anything out twice
  plan        the plan the agent runs (agent/tickwire_agent/plan.schema.json)
  pod         the agent Pod, a pure function of (FeedHandler, placement, plan)
  conditions  Kubernetes-style conditions and the Ready summary
  kube        the few API calls the operator makes, with optimistic concurrency on status
  metrics     the operator's own Prometheus metrics
  reconcile   the level-triggered reconcile and the finalizer's release
  handlers    kopf wiring: handlers, indexes, timers, probes, peering
"""
