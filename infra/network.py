"""The VPC: public subnets (load balancers, NAT) and private node subnets in every configured AZ, NAT, and an S3
gateway endpoint so model pulls from S3 stay off the NAT (and its per-GB charge)."""
from __future__ import annotations

import ipaddress

import pulumi
import pulumi_aws as aws

from infra.settings import StackSettings


class Network(pulumi.ComponentResource):
    """``vpc``, ``public_subnets``, ``private_subnets`` (one per AZ, same order as the settings)."""

    def __init__(self, name: str, settings: StackSettings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"gpufleet:environment": settings.environment}
        cidr = ipaddress.ip_network(settings.vpc_cidr)
        # /20 per subnet: 4,091 addresses, room for VPC-CNI pod IPs on the private side.
        blocks = list(cidr.subnets(new_prefix=20))
        azs = settings.availability_zones
        if len(blocks) < 2 * len(azs):
            raise ValueError(f"vpcCidr {cidr} is too small for {len(azs)} AZs of /20 subnets")

        self.vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=str(cidr), enable_dns_hostnames=True, enable_dns_support=True,
                               tags={**tags, "Name": f"{name}-vpc"}, opts=child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=tags, opts=child)
        public_rt = aws.ec2.RouteTable(f"{name}-public", vpc_id=self.vpc.id,
                                       routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}], tags=tags,
                                       opts=child)
        cluster_tag = f"kubernetes.io/cluster/{settings.name}"
        self.public_subnets, self.private_subnets, nats = [], [], []
        for i, az in enumerate(azs):
            pub = aws.ec2.Subnet(f"{name}-public-{az}", vpc_id=self.vpc.id, cidr_block=str(blocks[i]),
                                 availability_zone=az, map_public_ip_on_launch=False,
                                 tags={**tags, "kubernetes.io/role/elb": "1", cluster_tag: "shared"}, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-public-{az}", subnet_id=pub.id, route_table_id=public_rt.id,
                                          opts=child)
            self.public_subnets.append(pub)
            if settings.nat_gateways == "per-az" or i == 0:
                eip = aws.ec2.Eip(f"{name}-nat-{az}", domain="vpc", tags=tags, opts=child)
                nats.append(aws.ec2.NatGateway(f"{name}-nat-{az}", subnet_id=pub.id, allocation_id=eip.id,
                                               tags=tags, opts=child))
        private_rts = []
        for i, az in enumerate(azs):
            nat = nats[i] if settings.nat_gateways == "per-az" else nats[0]
            priv = aws.ec2.Subnet(f"{name}-private-{az}", vpc_id=self.vpc.id, cidr_block=str(blocks[len(azs) + i]),
                                  availability_zone=az, map_public_ip_on_launch=False,
                                  tags={**tags, "kubernetes.io/role/internal-elb": "1", cluster_tag: "shared"},
                                  opts=child)
            rt = aws.ec2.RouteTable(f"{name}-private-{az}", vpc_id=self.vpc.id,
                                    routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}], tags=tags,
                                    opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{az}", subnet_id=priv.id, route_table_id=rt.id, opts=child)
            self.private_subnets.append(priv)
            private_rts.append(rt)
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3", vpc_id=self.vpc.id, service_name=f"com.amazonaws.{settings.region}.s3",
            vpc_endpoint_type="Gateway", route_table_ids=[rt.id for rt in private_rts], tags=tags, opts=child)
        self.register_outputs({"vpc_id": self.vpc.id})
