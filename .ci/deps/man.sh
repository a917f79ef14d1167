# shellcheck shell=bash
# `shmif man`'s test renders the page with man(1) (man -l -).
apt_install man:man-db
