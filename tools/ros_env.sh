# Sourced by the run scripts: keeps DDS on this machine and lets camera-sized messages through.
# ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: discovery never leaves the host (Kilted ignores
# ROS_LOCALHOST_ONLY). A domain of our own so parallel runs do not see each other.
_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_repo/config/fastdds_shm.xml}"
unset _repo
