# The components' image, localhost/understudy:dev: understudy-scheduler,
# understudy-controllers and understudy-proxy in /usr/local/bin, run as 65532.
# It is the same image that `understudy-lab images` (e2e/src/images.rs) writes as
# an archive without a container engine: same paths, same user, no entrypoint
# (the chart names the binary in each container's `command`), same PATH and
# working directory, so charts/understudy runs either one unchanged.
#
#   docker build -t localhost/understudy:dev .      (or: make images)
#
# Base images are pinned by tag and digest, so a rebuild takes the same bases.
# The digests were not resolved against the registries from the machine that
# wrote this file (it has no engine and no registry access); they are the ones
# published for these tags at the time:
#   rust:1.95.0-bookworm: rustc 1.95.0, the version the workspace is built and
#     tested with, on bookworm, whose glibc (2.36) is the runtime's.
#   gcr.io/distroless/cc-debian12:nonroot: glibc and libgcc_s, the only shared
#     libraries the binaries load (ldd), and the nonroot user (65532).
# To refresh: `docker buildx imagetools inspect <tag>` and replace the digest.
#
# iptables: understudy-proxy runs iptables-restore/-save in the node's network
# namespace (ip6tables-* for IPv6: it is dual-stack), so the image carries
# Debian bookworm's iptables 1.8.9 (nf_tables
# backend, as kube-proxy's image), installed with apt in the build stage (the
# same Debian release as the runtime's glibc) and copied into the distroless
# runtime: the multi-call binary, its tool names, its dlopen'ed extensions and
# the libraries those load (ldd: libxtables, libmnl, libnftnl,
# libnetfilter_conntrack, libnfnetlink; glibc is distroless's). This keeps
# distroless for all three binaries (one image; the chart runs every component
# from it) instead of a larger bookworm-slim runtime, and it is the same set of
# files e2e/src/images.rs assembles for the archive image.
#
# nft: the proxy's nftables mode runs `nft -f -`, so Debian bookworm's nft
# 1.0.6 comes along the same way: the binary and the libraries ldd names
# beyond iptables' (libnftables, libedit, libjansson, libgmp, libtinfo,
# libbsd, libmd). Both sets are staged in /netfilter.
#
# ipset, ip, modprobe: the IPVS mode keeps its sets with `ipset restore`,
# the dummy interface's addresses with `ip`, and loads ip_vs with
# `modprobe`; Debian's ipset, iproute2 and kmod come the same way (libipset,
# libbpf, libelf, libcap, libz, libzstd, liblzma, libcrypto), staged in
# /netfilter too, modprobe as kmod's name for itself.

FROM docker.io/library/rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables nftables ipset iproute2 kmod \
    && mkdir -p /netfilter/usr/sbin /netfilter/usr/bin /netfilter/usr/lib/x86_64-linux-gnu /netfilter/lib/x86_64-linux-gnu \
    && cp -a /usr/sbin/xtables-nft-multi /usr/sbin/nft /usr/sbin/ipset /netfilter/usr/sbin/ \
    && cp -aL /bin/ip /netfilter/usr/sbin/ip \
    && cp -aL /bin/kmod /netfilter/usr/bin/kmod \
    && ln -s ../bin/kmod /netfilter/usr/sbin/modprobe \
    && for tool in iptables iptables-restore iptables-save ip6tables ip6tables-restore ip6tables-save; do ln -s xtables-nft-multi /netfilter/usr/sbin/$tool; done \
    && cp -a /usr/lib/x86_64-linux-gnu/xtables /netfilter/usr/lib/x86_64-linux-gnu/ \
    && for lib in libxtables.so.12 libmnl.so.0 libnftnl.so.11 libnetfilter_conntrack.so.3 libnfnetlink.so.0 \
                  libnftables.so.1 libedit.so.2 libjansson.so.4 libgmp.so.10 libtinfo.so.6 libbsd.so.0 libmd.so.0 \
                  libipset.so.13 libbpf.so.1 libelf.so.1 libcap.so.2 libz.so.1 libzstd.so.1 liblzma.so.5 libcrypto.so.3; do \
         cp -aL /lib/x86_64-linux-gnu/$lib /netfilter/lib/x86_64-linux-gnu/; done \
    && cp /etc/protocols /netfilter/etc-protocols
WORKDIR /src
COPY . .
# The cache mounts keep the crate downloads and the target directory between
# builds; the binaries are copied out because a cache mount is not part of
# the stage's filesystem. --locked: exactly the dependencies Cargo.lock pins.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && cp target/release/understudy-scheduler \
          target/release/understudy-controllers \
          target/release/understudy-proxy /out/

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
# distroless sets its own PATH and /home/nonroot as working directory; the
# archive image's values are used so both images behave alike.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /
COPY --from=build /netfilter/usr/ /usr/
COPY --from=build /netfilter/lib/ /lib/
COPY --from=build /netfilter/etc-protocols /etc/protocols
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
