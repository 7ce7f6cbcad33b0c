"""EKS: the control plane (secrets encrypted with KMS, private endpoint), the OIDC provider for IRSA, core add-ons
including the EBS CSI driver (for the gp3 StorageClass), an on-demand CPU system node group, and the Kubernetes
provider the rest of the stack deploys through."""
from __future__ import annotations

import hashlib
import json
import re

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.iam import assume_role_policy, irsa_trust, role
from infra.network import Network
from infra.settings import StackSettings


# EKS node-group names: at most 63 characters, a letter or digit first, then letters, digits, '-' and '_'
# (the aws.eks.NodeGroup provider schema; EKS CreateNodegroup).
_NODEGROUP_CHARS = re.compile(r"[^A-Za-z0-9_-]")
NODEGROUP_NAME_MAX = 63
# CreateAddon's resolveConflicts: replace the fields of a self-managed copy already in the cluster.
OVERWRITE = "OVERWRITE"


def nodegroup_name(logical: str) -> str:
    """The node group's EKS name from its logical name: '.' (as in an instance type) and other characters EKS
    refuses become '-'; an over-long name keeps its start and a hash of the whole, so names stay distinct."""
    name = _NODEGROUP_CHARS.sub("-", logical)
    if len(name) > NODEGROUP_NAME_MAX:
        digest = hashlib.sha256(logical.encode()).hexdigest()[:8]
        name = f"{name[:NODEGROUP_NAME_MAX - 9]}-{digest}"
    return name


def launch_template(name: str, volume_gib: int, opts: pulumi.ResourceOptions, **extra) -> aws.ec2.LaunchTemplate:
    """IMDSv2 only, one hop (pods cannot reach the node's credentials), encrypted gp3 root volume."""
    return aws.ec2.LaunchTemplate(
        name, metadata_options={"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1},
        block_device_mappings=[{"device_name": "/dev/xvda", "ebs": {
            "volume_size": volume_gib, "volume_type": "gp3", "encrypted": "true", "delete_on_termination": "true"}}],
        opts=opts, **extra)


class Cluster(pulumi.ComponentResource):
    def __init__(self, name: str, settings: StackSettings, network: Network,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:cluster:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        protected = pulumi.ResourceOptions(parent=self, protect=settings.protect)
        self.settings = settings
        self.secrets_key = aws.kms.Key(f"{name}-secrets", description=f"{settings.name} EKS secrets",
                                       enable_key_rotation=True, deletion_window_in_days=30, opts=protected)
        cluster_role = role(f"{name}-control-plane", assume_role_policy("eks.amazonaws.com"),
                            ["AmazonEKSClusterPolicy"], child)
        # EKS would create this group itself on the first log line, never expiring; made first, it keeps the stack's
        # retention.
        log_group = aws.cloudwatch.LogGroup(f"{name}-control-plane-logs", name=f"/aws/eks/{settings.name}/cluster",
                                            retention_in_days=settings.log_retention_days, opts=protected)
        # Public as well as private: `pulumi up` runs outside the VPC this stack creates and must reach the API to
        # apply any Kubernetes object; nodes use the private endpoint.
        self.eks = aws.eks.Cluster(
            f"{name}-eks", name=settings.name, version=settings.kubernetes_version, role_arn=cluster_role.arn,
            vpc_config={"subnet_ids": [s.id for s in network.private_subnets], "endpoint_private_access": True,
                        "endpoint_public_access": True, "public_access_cidrs": settings.endpoint_public_cidrs},
            encryption_config={"resources": ["secrets"], "provider": {"key_arn": self.secrets_key.arn}},
            # Access entries only; the identity that creates the cluster becomes its admin, or nothing can apply.
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            enabled_cluster_log_types=["api", "audit", "authenticator"],
            opts=pulumi.ResourceOptions(parent=self, protect=settings.protect, depends_on=[log_group]))
        self.oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=self.eks.identities.apply(lambda ids: ids[0]["oidcs"][0]["issuer"]),
            client_id_lists=["sts.amazonaws.com"], opts=child)

        self.node_role = role(f"{name}-nodes", assume_role_policy("ec2.amazonaws.com"),
                              ["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly",
                               "AmazonEKS_CNI_Policy", "AmazonSSMManagedInstanceCore"], child)
        system_lt = launch_template(f"{name}-system", 50, child)
        self.system_nodes = aws.eks.NodeGroup(
            f"{name}-system", node_group_name=nodegroup_name(f"{name}-system"), cluster_name=self.eks.name,
            node_role_arn=self.node_role.arn,
            subnet_ids=[s.id for s in network.private_subnets], capacity_type="ON_DEMAND",
            instance_types=[settings.system_node_type], ami_type="AL2023_x86_64_STANDARD",
            launch_template={"id": system_lt.id, "version": system_lt.latest_version.apply(str)},
            scaling_config={"min_size": settings.system_nodes, "desired_size": settings.system_nodes,
                            "max_size": settings.system_nodes + 2},
            labels={"gpufleet.io/pool": "system"}, opts=child)

        ebs_role = role(f"{name}-ebs-csi", irsa_trust(self.oidc, "kube-system", "ebs-csi-controller-sa"),
                        ["service-role/AmazonEBSCSIDriverPolicy"], child)
        after_nodes = pulumi.ResourceOptions(parent=self, depends_on=[self.system_nodes])
        # The VPC CNI enforces NetworkPolicies only with its network policy agent on; off, EKS ignores them.
        # EKS has already installed vpc-cni, coredns and kube-proxy itself (self-managed) when these are created; an
        # add-on whose fields differ from that copy fails with "Conflicts found when trying to apply" unless it
        # overwrites them (aws/amazon-network-policy-controller-k8s#200: vpc-cni with enableNetworkPolicy and the
        # PolicyEndpoint CRD). The add-on's configuration is the one we mean, so it wins.
        addons = [aws.eks.Addon(f"{name}-{addon}", cluster_name=self.eks.name, addon_name=addon, opts=after_nodes,
                                resolve_conflicts_on_create=OVERWRITE,
                                **({"configuration_values": json.dumps({"enableNetworkPolicy": "true"})}
                                   if addon == "vpc-cni" else {}))
                  for addon in ("vpc-cni", "coredns", "kube-proxy")]
        addons.append(aws.eks.Addon(f"{name}-ebs-csi", cluster_name=self.eks.name, addon_name="aws-ebs-csi-driver",
                                    resolve_conflicts_on_create=OVERWRITE,
                                    service_account_role_arn=ebs_role.arn, opts=after_nodes))
        # What cluster software waits for: nodes to run on, networking, DNS, and volumes (Prometheus' PVC).
        self.ready: list[pulumi.Resource] = [self.system_nodes, *addons]

        kubeconfig = pulumi.Output.all(self.eks.endpoint, self.eks.certificate_authority, self.eks.name).apply(
            lambda a: json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "gpufleet",
                "clusters": [{"name": "eks", "cluster": {"server": a[0],
                                                         "certificate-authority-data": a[1]["data"]}}],
                "contexts": [{"name": "gpufleet", "context": {"cluster": "eks", "user": "aws"}}],
                "users": [{"name": "aws", "user": {"exec": {
                    "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
                    "args": ["eks", "get-token", "--cluster-name", a[2], "--region", settings.region]}}}]}))
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=kubeconfig, enable_server_side_apply=True, opts=child)
        self.register_outputs({"cluster_name": self.eks.name, "oidc_provider_arn": self.oidc.arn})
