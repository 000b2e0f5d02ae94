# Packer: bake spotwatch into an AMI. Add these provisioners to your build block (an
# amazon-ebs source on Amazon Linux 2023 here; on Debian/Ubuntu use the .deb and
# `sudo apt-get install -y /tmp/spotwatch.deb`). Build the package first: packaging/build.

variable "spotwatch_package" {
  type    = string
  default = "dist/spotwatch-0.1.0-1.noarch.rpm"
}

build {
  sources = ["source.amazon-ebs.al2023"]

  provisioner "file" {
    source      = var.spotwatch_package
    destination = "/tmp/spotwatch.rpm"
  }

  # Optional: site-wide settings baked into the image (hooks can also come from user data).
  # provisioner "file" {
  #   source      = "spotwatch-site.yaml"
  #   destination = "/tmp/50-site.yaml"
  # }

  provisioner "shell" {
    inline = [
      "set -eu",
      "sudo dnf install -y /tmp/spotwatch.rpm",
      "if [ -f /tmp/50-site.yaml ]; then sudo install -m 0600 -o root -g root /tmp/50-site.yaml /etc/spotwatch/conf.d/50-site.yaml; fi",
      "spotwatch --version",
      "sudo spotwatch check",
      "test \"$(systemctl is-enabled spotwatch.service)\" = enabled",
      # no state from the build instance in the image
      "sudo systemctl stop spotwatch.service",
      "sudo sh -c 'rm -rf /var/lib/spotwatch/*'",
      "rm -f /tmp/spotwatch.rpm /tmp/50-site.yaml",
    ]
  }
}
