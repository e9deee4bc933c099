# cuda.cmake: resolves MIXRT_CUDA=AUTO|ON|OFF into MIXRT_WITH_CUDA.
# AUTO uses CUDA only when a working nvcc is found and never fails without one; ON requires it.
# Architectures are explicit (sm_80, sm_90 by default), never `native`, so a build host without a
# GPU produces code for the GPUs it will run on.
set(MIXRT_CUDA "AUTO" CACHE STRING "Build the CUDA backend: AUTO, ON or OFF")
set_property(CACHE MIXRT_CUDA PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${MIXRT_CUDA}" _mixrt_cuda)

set(MIXRT_WITH_CUDA OFF)
if(_mixrt_cuda STREQUAL "ON" OR _mixrt_cuda STREQUAL "AUTO")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(MIXRT_WITH_CUDA ON)
  elseif(_mixrt_cuda STREQUAL "ON")
    message(FATAL_ERROR "MIXRT_CUDA=ON but no working CUDA compiler (nvcc) was found")
  endif()
elseif(NOT _mixrt_cuda STREQUAL "OFF")
  message(FATAL_ERROR "MIXRT_CUDA must be AUTO, ON or OFF, found '${MIXRT_CUDA}'")
endif()

if(MIXRT_WITH_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "native")
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  # The CUDA backend itself is not part of this version: its sources (cuda/) come with it.
  message(STATUS "mixrt: nvcc found (architectures ${CMAKE_CUDA_ARCHITECTURES}); "
                 "this version has no CUDA backend yet, building the CPU backend")
else()
  message(STATUS "mixrt: building the CPU backend only (MIXRT_CUDA=${MIXRT_CUDA})")
endif()
