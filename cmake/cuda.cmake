# cuda.cmake: resolves MIXRT_CUDA=AUTO|ON|OFF into MIXRT_WITH_CUDA and provides mixrt_add_cuda /
# mixrt_link_cuda_runtime / mixrt_use_cuda_headers, which put the CUDA backend (cuda/*.cu) into the
# core and link and reach it.
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
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  message(STATUS "mixrt: building the CUDA backend (architectures ${CMAKE_CUDA_ARCHITECTURES}, "
                 "CUDA ${CUDAToolkit_VERSION})")
else()
  message(STATUS "mixrt: building the CPU backend only (MIXRT_CUDA=${MIXRT_CUDA})")
endif()

# mixrt_add_cuda(target): compiles cuda/*.cu into `target` (the core's objects) and defines
# MIXRT_WITH_CUDA for the C++ sources that dispatch to the CUDA backend.
function(mixrt_add_cuda target)
  if(NOT MIXRT_WITH_CUDA)
    return()
  endif()
  file(GLOB _mixrt_cuda_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/cuda/*.cu)
  target_sources(${target} PRIVATE ${_mixrt_cuda_sources})
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/cuda ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_definitions(${target} PRIVATE MIXRT_WITH_CUDA=1)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>)
  set_target_properties(${target} PROPERTIES CUDA_VISIBILITY_PRESET hidden
                                             CUDA_SEPARABLE_COMPILATION OFF)
endfunction()

# mixrt_link_cuda_runtime(target): links the static CUDA runtime into a binary that holds the
# core's CUDA objects.
function(mixrt_link_cuda_runtime target)
  if(MIXRT_WITH_CUDA)
    target_link_libraries(${target} PRIVATE CUDA::cudart_static)
  endif()
endfunction()

# mixrt_use_cuda_headers(target): for code outside the core's objects that calls into the CUDA
# backend (mixrt._internal's hooks): cuda/ and CUDA headers, MIXRT_WITH_CUDA.
function(mixrt_use_cuda_headers target)
  if(NOT MIXRT_WITH_CUDA)
    return()
  endif()
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/cuda ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_definitions(${target} PRIVATE MIXRT_WITH_CUDA=1)
endfunction()
