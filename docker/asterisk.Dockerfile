# Asterisk 22 from Debian sid: the same package recipe as docker/sandbox/build-root.sh,
# so production runs exactly the Asterisk the test suite runs.
FROM debian:sid-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      asterisk asterisk-core-sounds-en-wav sip-tester \
 && rm -rf /var/lib/apt/lists/* \
 && mv /etc/asterisk /etc/asterisk.dist && mkdir -p /etc/asterisk /run/asterisk /var/lib/hotline
# The service writes the generated config into /etc/asterisk (shared volume) and
# reloads through AMI; prompts go to /var/lib/hotline/sounds, recordings to
# /var/spool/asterisk/monitor (shared with the service for indexing).
VOLUME ["/etc/asterisk", "/var/lib/hotline", "/var/spool/asterisk/monitor", "/var/log/asterisk"]
EXPOSE 5060/udp 5038/tcp 10000-10999/udp
CMD ["/usr/sbin/asterisk", "-f", "-n", "-g"]
