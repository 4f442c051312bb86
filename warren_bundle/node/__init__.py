"""What a Kubernetes node needs from warren's containerd beyond containerd itself.

`network`: the default pod network (CNI conf and IPAM state in warren's own dirs, never
/etc/cni/net.d or /opt/cni/bin), the pod CIDR, and the host's forwarding and bridge netfilter.
`sandbox`: the carried pause image, imported into k8s.io and pinned at every start.
`kubelet`: what a kubelet needs to be told to use this runtime.
"""
