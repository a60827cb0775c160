# Sourced by the run scripts and by people: keeps DDS on this machine and lets camera-sized
# messages through. ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: discovery never leaves the host
# (Kilted ignores ROS_LOCALHOST_ONLY).
#
# ROS_DOMAIN_ID: one per user, so that two terminals of the same user see each other's nodes
# and other users on the machine do not. An id already set is kept. Otherwise it is read from
# ${XDG_CONFIG_HOME:-~/.config}/dpt_ros/ros_domain_id, which is created with a random id in
# 1..100 the first time. The id is printed (on stderr). tests/conftest.py does not use it: each
# test run takes a private domain of its own, away from the user's live nodes.
_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
if [ -n "${ROS_DOMAIN_ID:-}" ]; then
    _domain_from="already set"
else
    _domain_file="${XDG_CONFIG_HOME:-$HOME/.config}/dpt_ros/ros_domain_id"
    ROS_DOMAIN_ID="$({ tr -dc '0-9' < "$_domain_file"; } 2>/dev/null)"
    if [ -z "$ROS_DOMAIN_ID" ] || [ "$ROS_DOMAIN_ID" -lt 1 ] || [ "$ROS_DOMAIN_ID" -gt 100 ]; then
        ROS_DOMAIN_ID=$(( (RANDOM % 100) + 1 ))
        mkdir -p "$(dirname "$_domain_file")" && echo "$ROS_DOMAIN_ID" > "$_domain_file"
    fi
    _domain_from="$_domain_file"
    unset _domain_file
fi
export ROS_DOMAIN_ID
echo "dpt_ros: ROS_DOMAIN_ID=$ROS_DOMAIN_ID ($_domain_from)" >&2
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_repo/config/fastdds_shm.xml}"
unset _repo _domain_from
