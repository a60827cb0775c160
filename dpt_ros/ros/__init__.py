"""ROS 2 adapters: the only place in the package that imports rclpy and message types."""
