#!/usr/bin/env bash
# The main job on the bundled sample: the offline bag tool on dpt_ros/data/sample_drive (a
# synthetic 2-second drive: camera, camera_info, LiDAR, /tf_static), written to out/demo:
# an output bag (input topics + depth, clouds, colour images), a preview MP4 and a contact sheet.
# Offline machines use random weights (DPT_WEIGHTS=random, the default here); with network
# access, DPT_WEIGHTS=dpt_hybrid downloads and verifies the authors' released checkpoint once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
OUT="${DPT_OUT:-out/demo}"
WEIGHTS="${DPT_WEIGHTS:-random}"
BAG="$OUT/sample_drive_depth"
mkdir -p "$OUT"
if [ "$WEIGHTS" = "random" ]; then
    echo "dpt_ros demo: RANDOM weights (offline). The network has not learnt anything, so the"
    echo "  depth pictures are noise and no metric scale can be fitted to the LiDAR: the summary"
    echo "  will say so, and that is expected. DPT_WEIGHTS=dpt_hybrid uses the released checkpoint."
fi
.venv/bin/python -m dpt_ros.bag dpt_ros/data/sample_drive --out "$BAG" --overwrite \
    --model "${DPT_MODEL:-dpt_hybrid}" --weights "$WEIGHTS" --export preview,png \
    --report "$OUT/sample_drive_report.json" "$@"
echo
echo "dpt_ros demo: done. What it wrote:"
echo "  $BAG/                      output bag (MCAP): the input topics plus /camera/depth/image,"
echo "                             /camera/depth_relative/image, /camera/points, /camera/depth/color ..."
echo "                             (open the .mcap in Foxglove, or read it with the rosbags library)"
echo "  $BAG/exports/camera/preview.mp4       video: input | depth colour map, frame by frame"
echo "  $BAG/exports/camera/contact_sheet.png six frames of the preview in one picture"
echo "  $BAG/exports/camera/depth_png/        16-bit depth PNGs (mm; *_relative.png without a scale)"
echo "  $OUT/sample_drive_report.json         the summary as JSON"
